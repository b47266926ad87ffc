"""Tables, the engine and its sessions, migrations, and publication of row changes."""
