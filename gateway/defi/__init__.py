"""DeFi (issue 8): chains through web3, contracts compiled from the repo's Vyper sources, the
demo world on the embedded EVM, protocol plugins, quotes, routing and protected swaps."""
