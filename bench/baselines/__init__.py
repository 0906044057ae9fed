"""Reference implementations the gateway is measured against."""
