"""Development tools shared by the tests, the bench and the screenshot script (never by the product)."""
