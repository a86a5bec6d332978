"""Task implementations, one module each; importing a module registers its task (:func:`encouraging.load_plugins`
imports them all)."""
