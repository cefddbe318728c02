"""vitforge.sw"""
