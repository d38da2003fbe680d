"""Results that are honest and easy to read: tables over runs, curves, confusion matrices, significance tests."""
