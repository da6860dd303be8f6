"""The wiring layer: Prefect flows and deployments, and the `mmolre` command line. They call `pipelines` and
`mmolre`; nothing imports `flows`."""
