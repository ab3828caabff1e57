"""her2sim.recon"""
