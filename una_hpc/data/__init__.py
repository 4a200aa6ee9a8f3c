"""una_hpc.data"""
