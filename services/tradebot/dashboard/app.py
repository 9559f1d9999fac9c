"""The Streamlit entry point: `streamlit run app.py` (what `tradebot dashboard` does). Two pages."""

from __future__ import annotations

from pathlib import Path

import streamlit as st

HERE = Path(__file__).resolve().parent


def main() -> None:
    st.set_page_config(page_title="tradebot", page_icon="📈", layout="wide")
    page = st.navigation(
        [
            st.Page(
                HERE / "live.py", title="Live", icon=":material/monitoring:", url_path="live", default=True
            ),
            st.Page(
                HERE / "backtest_page.py", title="Backtest", icon=":material/science:", url_path="backtest"
            ),
        ]
    )
    page.run()


if __name__ == "__main__":
    main()
