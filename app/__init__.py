"""The stream job: a Faust application that keeps engagement state per student."""
