"""vitforge.hw"""
