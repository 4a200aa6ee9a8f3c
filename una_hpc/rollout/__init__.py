"""una_hpc.rollout"""
