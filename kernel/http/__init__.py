"""What both HTTP APIs share: problem+json errors, body limits, metrics, health routes."""
