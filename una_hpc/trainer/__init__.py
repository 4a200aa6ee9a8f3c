"""una_hpc.trainer"""
