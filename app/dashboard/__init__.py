"""The browser dashboard: Jinja2 page shells whose scripts draw the JSON from /api/v1 with Plotly."""
