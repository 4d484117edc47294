"""The leaderboard: a read-only Gradio app, static exports and the papers' numbers over the results
database (see README.md here). Importing this package does not import gradio; ``leaderboard.app`` does."""
