"""Installs cxr_fast; metadata and dependencies live in setup.cfg."""
from setuptools import setup

setup()
