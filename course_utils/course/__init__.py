"""The course machinery, on the top floor: the environment report, releasing, running and grading notebooks, the sandbox, the Colab rehearsal. No lesson module imports it."""
