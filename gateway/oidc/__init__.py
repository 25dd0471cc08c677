"""The OpenID Connect provider: browser single sign-on for the tax subsystems (docs/sso.md)."""
