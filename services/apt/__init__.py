"""The apt service: Debian packages and apt repositories, on real apt and dpkg."""
