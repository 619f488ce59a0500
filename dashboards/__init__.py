"""The Dash app over a results store: queries (pyarrow, server-side), pure figure functions, layout and callbacks."""
