"""The Serve application's config and `momu serve`; the application itself is in the repository's serving/."""
