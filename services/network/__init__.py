"""The network service: Ethernet and Wi-Fi through NetworkManager over D-Bus."""
