"""vitforge.boards"""
