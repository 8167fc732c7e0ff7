"""The fedforget Flower ClientApp."""
