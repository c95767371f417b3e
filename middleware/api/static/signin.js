"use strict";
// The sign-in page of /dashboard when admin_token is set. A browser cannot send an
// Authorization header when a person opens a link, so this page takes the token from its form
// or from #token=... (a fragment never reaches the server or its logs), loads /dashboard again
// with the header, and writes the answer into this document. The token stays in this tab's
// sessionStorage, where the dashboard's own script reads it for its fetches.
(function () {
  var KEY = "inferwatch-token";
  var form = document.getElementById("signin");
  var input = document.getElementById("token");
  var message = document.getElementById("signin-message");

  function remember(token) {
    try {
      if (token) sessionStorage.setItem(KEY, token);
      else sessionStorage.removeItem(KEY);
    } catch (e) { /* storage disabled: the token is asked for again next time */ }
  }

  function stored() {
    try { return sessionStorage.getItem(KEY); } catch (e) { return null; }
  }

  function fromFragment() {
    var match = /(?:^#|&)token=([^&]*)/.exec(location.hash);
    if (!match) return null;
    // Out of the address bar and the history entry at once.
    history.replaceState(null, "", location.pathname + location.search);
    try { return decodeURIComponent(match[1]); } catch (e) { return match[1]; }
  }

  async function open(token) {
    message.textContent = "";
    var response;
    try {
      response = await fetch(location.pathname + location.search, {
        headers: { Authorization: "Bearer " + token, Accept: "text/html" },
        cache: "no-store",
      });
    } catch (e) {
      message.textContent = "The monitor did not answer.";
      return;
    }
    if (!response.ok) {
      remember(null);
      message.textContent = response.status === 401
        ? "That token was not accepted."
        : "The monitor answered " + response.status + ".";
      input.focus();
      return;
    }
    remember(token);
    var page = await response.text();
    document.open();
    document.write(page);
    document.close();
  }

  form.addEventListener("submit", function (event) {
    event.preventDefault();
    var token = input.value.trim();
    if (token) open(token);
  });

  // A #token=... typed onto this page's address changes only the fragment: no new load.
  window.addEventListener("hashchange", function () {
    var token = fromFragment();
    if (token) open(token);
  });

  var token = fromFragment() || stored();
  if (token) open(token);
  else input.focus();
})();
