"""What alert messages say, for each channel: plain text, HTML, Slack attachments, Teams cards.

Events are the JSON-ready dicts that :class:`inferwatch.middleware.alerts.manager.AlertManager`
makes (their fields are listed in docs/alerts.md). Every message says what is wrong, by how much,
since when, and where to look.
"""

from __future__ import annotations

import html
from collections.abc import Mapping
from datetime import datetime
from typing import Any

__all__ = [
    "headline",
    "render_html",
    "render_slack",
    "render_teams",
    "render_text",
    "render_webhook",
]

_LABELS = {"dashboard": "Dashboard", "drift": "Drift report", "evaluation": "Evaluation"}
_COLORS = {"critical": "#d93025", "warning": "#e37400", "resolved": "#188038"}


def _when(iso: str) -> str:
    return datetime.fromisoformat(iso).strftime("%Y-%m-%d %H:%M:%S UTC")


def _span(seconds: float) -> str:
    if seconds < 90:
        return f"{seconds:.0f}s"
    if seconds < 5400:
        return f"{seconds / 60:.0f} min"
    return f"{seconds / 3600:.1f} h" if seconds < 172800 else f"{seconds / 86400:.1f} days"


def headline(event: Mapping[str, Any]) -> str:
    """One line: what is wrong, where, and by how much (or that it is over)."""
    if event["state"] == "resolved":
        return f"RESOLVED: {event['title']} on {event['source']} after {_span(event['duration_s'])}"
    return f"{event['severity'].upper()}: {event['title']} on {event['source']}: {event['summary']}"


def _parts(
    event: Mapping[str, Any],
) -> tuple[list[str], list[tuple[str, str]], list[tuple[str, str]]]:
    """The message's lines, facts (name, value) and links (label, address)."""
    since, at = _when(event["since"]), _when(event["at"])
    if event["state"] == "resolved":
        lines = [f"Was: {event['worst']}", f"Now: {event['summary']}"]
        facts = [("From", f"{since} to {at}")]
    else:
        lines = [event["summary"], *(f"- {detail}" for detail in event["details"])]
        facts = [("Since", f"{since} ({_span(event['duration_s'])} ago)")]
    facts += [("Severity", event["severity"]), ("Rule", event["rule"]), ("Source", event["source"])]
    links = [(_LABELS.get(key, key.title()), url) for key, url in event["links"].items()]
    return lines, facts, links


def _absolute(url: str) -> bool:
    return url.startswith(("http://", "https://"))


def _where(url: str) -> str:
    return url if _absolute(url) else f"GET {url} on the monitor API"


def render_text(event: Mapping[str, Any]) -> str:
    """The plain-text message (email's text part, the generic webhook's ``text``)."""
    lines, facts, links = _parts(event)
    return "\n".join(
        [headline(event), "", *lines, "", *(f"{name}: {value}" for name, value in facts), "",
         "Where to look:", *(f"  {label}: {_where(url)}" for label, url in links)]
    )  # fmt: skip


def render_html(event: Mapping[str, Any]) -> str:
    """The email's HTML part."""
    lines, facts, links = _parts(event)
    esc = html.escape
    color = _COLORS["resolved" if event["state"] == "resolved" else event["severity"]]
    items = "".join(f"<p>{esc(line)}</p>" for line in lines)
    rows = "".join(f"<tr><th align=left>{esc(k)}</th><td>{esc(v)}</td></tr>" for k, v in facts)
    look = " &middot; ".join(
        f'<a href="{esc(url)}">{esc(label)}</a>' if _absolute(url) else esc(_where(url))
        for label, url in links
    )
    return (
        f'<html><body style="font-family:sans-serif"><h3 style="color:{color}">'
        f"{esc(headline(event))}</h3>{items}<table>{rows}</table><p>Where to look: {look}</p>"
        "</body></html>"
    )


def render_webhook(event: Mapping[str, Any]) -> dict[str, Any]:
    """The generic webhook body: the event's fields plus its plain-text message."""
    return {"version": 1, **event, "text": render_text(event)}


def render_slack(event: Mapping[str, Any]) -> dict[str, Any]:
    """A Slack incoming-webhook body; Mattermost and Rocket.Chat take the same attachments."""
    lines, facts, links = _parts(event)
    first = next((url for _, url in links if _absolute(url)), None)
    fields = [{"title": name, "value": value, "short": True} for name, value in facts]
    where = "\n".join(f"{label}: {_where(url)}" for label, url in links)
    attachment = {
        "fallback": headline(event),
        "color": _COLORS["resolved" if event["state"] == "resolved" else event["severity"]],
        "title": f"{event['title']} ({event['state']})",
        **({"title_link": first} if first else {}),
        "text": "\n".join(lines),
        "fields": [*fields, {"title": "Where to look", "value": where, "short": False}],
        "footer": "inferwatch",
        "ts": int(datetime.fromisoformat(event["at"]).timestamp()),
    }
    return {"text": headline(event), "attachments": [attachment]}


def render_teams(event: Mapping[str, Any]) -> dict[str, Any]:
    """An Adaptive Card message: what a Teams workflow's webhook trigger posts to a channel."""
    lines, facts, links = _parts(event)
    state = "resolved" if event["state"] == "resolved" else event["severity"]
    color = {"critical": "Attention", "warning": "Warning", "resolved": "Good"}[state]
    body: list[dict[str, Any]] = [
        {"type": "TextBlock", "text": headline(event), "weight": "Bolder", "size": "Medium",
         "color": color, "wrap": True},
        {"type": "TextBlock", "text": "\n\n".join(lines), "wrap": True},
        {"type": "FactSet", "facts": [{"title": name, "value": value} for name, value in facts]},
    ]  # fmt: skip
    relative = [f"{label}: {_where(url)}" for label, url in links if not _absolute(url)]
    if relative:
        body.append({"type": "TextBlock", "text": "\n\n".join(relative), "wrap": True})
    card = {
        "$schema": "http://adaptivecards.io/schemas/adaptive-card.json",
        "type": "AdaptiveCard",
        "version": "1.4",
        "msteams": {"width": "Full"},
        "body": body,
        "actions": [
            {"type": "Action.OpenUrl", "title": label, "url": url}
            for label, url in links
            if _absolute(url)
        ],
    }
    return {
        "type": "message",
        "attachments": [
            {"contentType": "application/vnd.microsoft.card.adaptive", "contentUrl": None,
             "content": card}
        ],
    }  # fmt: skip
