"""Storage: URIs -> `Store` (local or S3), the bookkeeping every stage uses, and the store comparison."""
