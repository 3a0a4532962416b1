"""The browser page and the HTTP API (`digitrec serve`); the app is built by digitrec.web.app.create_app."""
