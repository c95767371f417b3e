"""How the model serves: requests, latency and errors, and the resources it uses."""
