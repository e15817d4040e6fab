"""Keys: the ciphertext formats, where secrets come from, rotation, and writing one user's key."""
