"""Tests of the deployment files: Orthanc routing, compose/Dockerfile consistency."""
