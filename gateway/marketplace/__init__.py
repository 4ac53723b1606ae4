"""The marketplace as the gateway runs it: publication, installation, the plugin sandbox."""
