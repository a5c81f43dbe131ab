"""Paper-style tables, figures, the HTML report and metric regression checks."""
