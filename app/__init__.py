"""Streamlit UI layer (and the CLI root). Streamlit is imported only by the UI modules, never at package import."""
