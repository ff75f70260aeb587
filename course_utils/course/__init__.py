"""The course machinery students need not read: profiles and sources, the environment, releasing, running and grading notebooks, the sandbox, the Colab rehearsal."""
