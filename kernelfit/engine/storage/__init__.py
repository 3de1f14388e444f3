"""Where K lives during a solve: one resident array, lower tiles in host memory
(:mod:`.tiles`), or lower tiles in a checksummed, resumable file on disk
(:mod:`.disk_tiles`); :mod:`.build` fills the store the Plan chose."""
