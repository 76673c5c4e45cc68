"""The unfolded steps of LMS-Net (Learned Mumford-Shah network), one module per step.

    data_consistency  rho of eq. 5, energy of eq. 10 and its minimiser DC (eq. 12, 16, 20)
    initialisation    support prototypes and u^0 (eq. 15-16), Voronoi representative prototypes p^0
    mut               MAP on the query (eq. 8) and the Momentum Update Transformer (eq. 17-19)
    denoiser          the Mask Denoiser MD and its ablation variants (Fig. 8)
    pdnet             the dual update (eq. 13) and PD-Net (eq. 20-21)
    block             one LMS block = prototype step + mask step; the stage record
    positive          the learned positive scalars alpha and delta^k

The model that assembles them is :class:`medfss.models.lmsnet.LMSNet`.
Class order everywhere is the project's: channel 0 background, channel 1
foreground (the paper's i = 2 and i = 1).
"""
