"""vitforge.quant"""
