"""vitforge.sim"""
