"""The web tier: blueprints, each bound in `app.create_app`."""
