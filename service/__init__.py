"""The DICOM service: listener, durable storage, jobs, export, REST API (docs/service.md)."""
