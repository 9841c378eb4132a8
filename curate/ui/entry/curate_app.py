"""What `curate app` runs: `curate.ui.main.run_app()`.

Streamlit puts the folder of the script it runs first on `sys.path` while a page runs. This
file lives alone in its folder so that no page module can shadow a package of the same name:
run from `curate/ui/`, the first `import training.config` found the Training page
(`curate/ui/training.py`) instead of the `training` package, and the Training and Evaluation
pages failed in the real app.
"""

from curate.ui.main import run_app

run_app()
