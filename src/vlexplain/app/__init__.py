"""vlexplain.app: the web explorer behind ``vlexplain serve`` (needs the ``app`` extra: gradio).

``app.py`` builds the Gradio Blocks (Explain and Concepts tabs), ``runner.py`` and
``concept_runner.py`` do the work without any web framework,
``render.py`` draws the results and ``samples.py`` lists the built-in images. Importing this
package does not import gradio.
"""
