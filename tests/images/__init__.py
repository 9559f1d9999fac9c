"""Static tests of the container images (Dockerfiles), skaffold.yaml and the kind cluster config."""
