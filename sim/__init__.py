"""her2sim.sim"""
