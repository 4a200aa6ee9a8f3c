"""una_hpc.parallel"""
