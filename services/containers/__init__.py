"""The containers service: applications as Docker containers, through the Docker Engine API."""
