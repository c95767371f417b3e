"""The monitor API: routes, access, dashboard and the OpenAPI document."""
