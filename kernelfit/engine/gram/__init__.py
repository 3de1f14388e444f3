"""Blocks of K: from the points themselves (:mod:`.panels`), or accumulated from a
front end's column chunks when the features never fit at once (:mod:`.stream`)."""
