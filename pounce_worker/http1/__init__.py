"""http1"""
