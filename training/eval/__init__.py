"""The evaluation harness behind ``medvlm eval {vqa,probe,reportcheck}``."""
