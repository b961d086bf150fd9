"""The aiogram bot: routers per feature, middlewares, keyboards, streaming, entry points."""
