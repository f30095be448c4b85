"""Text: long-text splitting, the prompt layouts, the edit vocabulary and the markup rules."""
