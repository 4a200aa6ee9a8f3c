"""una_hpc.models"""
