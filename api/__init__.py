"""Pingyi (评议): public supervision of transport law enforcement."""
